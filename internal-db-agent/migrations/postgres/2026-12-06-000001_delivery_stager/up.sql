-- Several stagers: a delivery is identified by (stager, stager_seq), each stager numbering
-- its own log. Rows from before (one stager) belong to the unnamed stager ''.
ALTER TABLE deliveries ADD COLUMN stager TEXT NOT NULL DEFAULT '';
ALTER TABLE deliveries DROP CONSTRAINT deliveries_stager_seq_key;
CREATE UNIQUE INDEX deliveries_stager_seq ON deliveries (stager, stager_seq);
