-- What the UI's Activity page shows beside each chat, from pipeline.knowledge.chat.persist
-- (older events lack them: NULL): timings, cost, and the prompt the gateway wrote.
ALTER TABLE chat_history
    ADD COLUMN latency_ms     double precision,
    ADD COLUMN ttft_ms        double precision,
    ADD COLUMN cost_usd       double precision,
    ADD COLUMN prompt_name    text,
    ADD COLUMN prompt_version integer;
CREATE INDEX chat_pairs_ts ON chat_pairs (ts);
