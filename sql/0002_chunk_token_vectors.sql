-- Late-interaction (MaxSim) rerank without running the model over the candidates: each
-- chunk's token vectors, computed at ingest. int8, tokens x {{embedding_dim}} row-major, each
-- token scaled so its largest component is +-127 (about 77 kB for a 200-token chunk of a 384-dim
-- model). Chunks without a row (ingested before, or with the feature off) are encoded at
-- query time instead.
CREATE TABLE chunk_token_vectors (
    workspace    text    NOT NULL,
    document_id  text    NOT NULL,
    chunk_index  integer NOT NULL,
    vectors      bytea   NOT NULL,
    PRIMARY KEY (workspace, document_id, chunk_index),
    FOREIGN KEY (workspace, document_id, chunk_index)
        REFERENCES document_chunks (workspace, document_id, chunk_index) ON DELETE CASCADE
);
-- Quantised vectors do not compress: store them out of line without trying.
ALTER TABLE chunk_token_vectors ALTER COLUMN vectors SET STORAGE EXTERNAL;
