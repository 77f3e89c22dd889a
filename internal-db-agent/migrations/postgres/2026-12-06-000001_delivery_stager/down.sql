DROP INDEX deliveries_stager_seq;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_stager_seq_key UNIQUE (stager_seq);
ALTER TABLE deliveries DROP COLUMN stager;
