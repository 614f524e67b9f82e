-- Knowledge: documents and their chunks, embedded with one model per database.
-- {{embedding_dim}} is filled by `appliance migrate` from the embedding model in use and
-- recorded in knowledge_meta, which the gateway checks at start.
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE knowledge_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
INSERT INTO knowledge_meta (key, value) VALUES ('embedding_dim', '{{embedding_dim}}');

CREATE TABLE documents (
    workspace    text        NOT NULL,
    document_id  text        NOT NULL,
    content_hash text        NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    chunk_count  integer     NOT NULL,
    chars        integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (workspace, document_id)
);

CREATE TABLE document_chunks (
    id           bigserial   PRIMARY KEY,
    workspace    text        NOT NULL,
    document_id  text        NOT NULL,
    chunk_index  integer     NOT NULL,
    content      text        NOT NULL,
    content_hash text        NOT NULL,
    metadata     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    embedding    vector({{embedding_dim}}) NOT NULL,
    tsv          tsvector    GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    UNIQUE (workspace, document_id, chunk_index),
    FOREIGN KEY (workspace, document_id) REFERENCES documents (workspace, document_id) ON DELETE CASCADE
);

CREATE INDEX document_chunks_embedding_hnsw ON document_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64);
CREATE INDEX document_chunks_tsv_gin ON document_chunks USING gin (tsv);
CREATE INDEX document_chunks_workspace ON document_chunks (workspace);
