-- The event pipeline's tables, written by `appliance persist` from the PIPELINE stream.
-- Every row is keyed by its event_id (the Nats-Msg-Id), so a redelivered message is a no-op
-- (INSERT ... ON CONFLICT DO NOTHING). correlation_id joins the rows of one request.

CREATE TABLE chat_history (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    model          text        NOT NULL,
    upstream_model text,
    backend        text        NOT NULL,
    route          text        NOT NULL,
    streaming      boolean     NOT NULL,
    messages       jsonb       NOT NULL,
    response_text  text        NOT NULL,
    finish_reason  text,
    prompt_tokens  integer     NOT NULL DEFAULT 0,
    completion_tokens integer  NOT NULL DEFAULT 0,
    workspace      text,
    sources        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    tool_calls     jsonb       NOT NULL DEFAULT '[]'::jsonb
);
CREATE INDEX chat_history_correlation ON chat_history (correlation_id);
CREATE INDEX chat_history_ts ON chat_history (ts);

-- One prompt/answer pair per successful chat, for fine-tuning data sets.
CREATE TABLE chat_pairs (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    model          text        NOT NULL,
    prompt         text        NOT NULL,
    response       text        NOT NULL,
    system         text
);
CREATE INDEX chat_pairs_correlation ON chat_pairs (correlation_id);

CREATE TABLE tool_calls (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    call_index     integer     NOT NULL,
    name           text        NOT NULL,
    arguments      text        NOT NULL,
    call_id        text,
    model          text        NOT NULL
);
CREATE INDEX tool_calls_correlation ON tool_calls (correlation_id);

CREATE TABLE flow_lineage (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    kind           text        NOT NULL,          -- 'chat' (rag chat) | 'compose'
    workspace      text,
    sources        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX flow_lineage_correlation ON flow_lineage (correlation_id);

CREATE TABLE retrievals (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    workspace      text        NOT NULL,
    query          text        NOT NULL,
    mode           text        NOT NULL,
    reranked       boolean     NOT NULL,
    hits           jsonb       NOT NULL,
    latency_ms     double precision NOT NULL
);
CREATE INDEX retrievals_correlation ON retrievals (correlation_id);

CREATE TABLE embedding_calls (
    event_id       text PRIMARY KEY,
    correlation_id text        NOT NULL,
    ts             timestamptz NOT NULL,
    model          text        NOT NULL,
    inputs         integer     NOT NULL,
    tokens         integer     NOT NULL,
    dimensions     integer     NOT NULL,
    latency_ms     double precision NOT NULL,
    path           text        NOT NULL
);

-- Messages that kept failing (bad JSON, schema mismatch), set aside so the rest flow.
CREATE TABLE dead_letters (
    id             bigserial PRIMARY KEY,
    stream_seq     bigint      NOT NULL UNIQUE,
    subject        text        NOT NULL,
    msg_id         text,
    data           bytea       NOT NULL,
    error          text        NOT NULL,
    deliveries     integer     NOT NULL,
    ts             timestamptz NOT NULL DEFAULT now()
);
