-- One row per message an SMTP relay accepted, keyed by the queue job's id: a job delivered
-- again after its message was sent is acknowledged without sending it twice.
CREATE TABLE mail_deliveries (
    message_key text PRIMARY KEY,
    kind text NOT NULL,
    relay_reply text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mail_deliveries_sent_at ON mail_deliveries (sent_at);
