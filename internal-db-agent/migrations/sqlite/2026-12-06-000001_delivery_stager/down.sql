CREATE TABLE deliveries_old (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    area_id TEXT NOT NULL,
    file TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    protocol TEXT NOT NULL,
    stager_seq BIGINT UNIQUE,
    delivered_at TIMESTAMP NOT NULL
);
INSERT INTO deliveries_old (id, area_id, file, bytes, protocol, stager_seq, delivered_at)
    SELECT id, area_id, file, bytes, protocol, stager_seq, delivered_at FROM deliveries
    WHERE stager = '';
DROP TABLE deliveries;
ALTER TABLE deliveries_old RENAME TO deliveries;
CREATE INDEX deliveries_area ON deliveries (area_id);
