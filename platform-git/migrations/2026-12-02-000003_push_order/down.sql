DROP INDEX webhook_deliveries_waiting;
ALTER TABLE webhook_deliveries DROP COLUMN push_seq;
DROP TABLE webhook_fan_outs;
ALTER TABLE repositories DROP COLUMN hooks_seq, DROP COLUMN push_seq;
