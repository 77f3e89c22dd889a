-- Several stagers: a delivery is identified by (stager, stager_seq), each stager numbering
-- its own log. Rows from before (one stager) belong to the unnamed stager ''. SQLite cannot
-- drop a column's UNIQUE, so the table is rebuilt.
CREATE TABLE deliveries_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    area_id TEXT NOT NULL,
    file TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    protocol TEXT NOT NULL,
    stager_seq BIGINT,
    delivered_at TIMESTAMP NOT NULL,
    stager TEXT NOT NULL DEFAULT ''
);
INSERT INTO deliveries_new (id, area_id, file, bytes, protocol, stager_seq, delivered_at, stager)
    SELECT id, area_id, file, bytes, protocol, stager_seq, delivered_at, '' FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_area ON deliveries (area_id);
CREATE UNIQUE INDEX deliveries_stager_seq ON deliveries (stager, stager_seq);
