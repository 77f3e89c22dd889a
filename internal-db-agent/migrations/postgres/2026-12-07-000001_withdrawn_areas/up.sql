-- Prepares the web frontend gave up after their record-download went unanswered: a record
-- of such an area that arrives later is refused, so a customer told "failed" has no row.
CREATE TABLE withdrawn_areas (
    area_id TEXT PRIMARY KEY NOT NULL,
    customer_id BIGINT NOT NULL,
    withdrawn_at TIMESTAMP NOT NULL
);
