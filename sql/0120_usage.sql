-- Usage accounting (docs/usage.md), written by `appliance persist` from TELEMETRY
-- (telemetry.knowledge.chat and .embedding: every chat, failed ones too, and every embeddings call).
--
-- usage_events: one row per request, keyed by its event_id like the pipeline's tables, so a
-- redelivery is a no-op; pruned after APPLIANCE_USAGE__RAW_RETENTION_DAYS.
-- usage_hourly: the same, added up per hour, key, model and backend in the transaction that
-- stores the raw rows (only rows actually inserted count); what /admin/usage reads; pruned after
-- APPLIANCE_USAGE__ROLLUP_RETENTION_DAYS. latency_buckets is a log-spaced histogram
-- (appliance/domain/usage.py: 8 buckets per doubling from 1 ms), so p50/p95 survive the rollup.
-- key '' is a request without a named key (no keys configured, or a static catalog key).

CREATE TABLE usage_events (
    event_id          text PRIMARY KEY,
    correlation_id    text        NOT NULL,
    ts                timestamptz NOT NULL,
    kind              text        NOT NULL,          -- 'chat' | 'embedding'
    key               text        NOT NULL DEFAULT '',
    model             text        NOT NULL,
    backend           text        NOT NULL,
    prompt_tokens     integer     NOT NULL DEFAULT 0,
    completion_tokens integer     NOT NULL DEFAULT 0,
    cost_usd          double precision NOT NULL DEFAULT 0,
    gpu_seconds       double precision NOT NULL DEFAULT 0,
    latency_ms        double precision,
    ttft_ms           double precision,
    status            integer     NOT NULL DEFAULT 200
);
CREATE INDEX usage_events_ts ON usage_events (ts);
CREATE INDEX usage_events_key_ts ON usage_events (key, ts);

CREATE TABLE usage_hourly (
    hour              timestamptz NOT NULL,
    key               text        NOT NULL,
    model             text        NOT NULL,
    backend           text        NOT NULL,
    requests          bigint      NOT NULL,
    prompt_tokens     bigint      NOT NULL,
    completion_tokens bigint      NOT NULL,
    cost_usd          double precision NOT NULL,
    gpu_seconds       double precision NOT NULL,
    errors            bigint      NOT NULL,
    latency_buckets   integer[]   NOT NULL,
    PRIMARY KEY (hour, key, model, backend)
);
