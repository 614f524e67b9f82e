-- Retention for the event tables (the persister deletes rows past `history.retention_days`,
-- stored Responses past `history.responses_retention_days`): each needs its time indexed.
-- chat_history and chat_pairs have theirs (0100, 0101); api_responses has api_responses_created.
CREATE INDEX tool_calls_ts ON tool_calls (ts);
CREATE INDEX flow_lineage_ts ON flow_lineage (ts);
CREATE INDEX retrievals_ts ON retrievals (ts);
CREATE INDEX embedding_calls_ts ON embedding_calls (ts);
CREATE INDEX dead_letters_ts ON dead_letters (ts);
