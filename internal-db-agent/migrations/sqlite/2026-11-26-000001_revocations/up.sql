-- Append-only: operator decisions that take staged areas (and, for a disable, the
-- customer's open web sessions) away. The web frontend reads them as a feed (`agent.revocations`).
-- product NULL = everything of the customer (a disable).
CREATE TABLE revocations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id BIGINT NOT NULL REFERENCES customers(id),
    product TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);
