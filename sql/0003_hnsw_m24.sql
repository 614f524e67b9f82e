-- A denser HNSW graph for the chunk embeddings: m 24 / ef_construction 128 instead of 16 / 64.
-- With real MiniLM embeddings at 100k chunks, 16/64 needs ef_search 500+ for recall@10 >= 0.95
-- (the dense query then takes 13+ ms); 24/128 gets 0.96-0.97 at ef_search 200-250 in 8-9 ms
-- (docs/knowledge.md, tests/perf/bench_knowledge.py). The build reads every chunk, about
-- 100 s per 100k chunks on two cores. It runs beside the old index: searches keep using
-- that one, writes to document_chunks wait; the swap at the end is brief.
SET LOCAL maintenance_work_mem = '512MB';
CREATE INDEX document_chunks_embedding_hnsw_m24 ON document_chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 24, ef_construction = 128);
DROP INDEX IF EXISTS document_chunks_embedding_hnsw;
ALTER INDEX document_chunks_embedding_hnsw_m24 RENAME TO document_chunks_embedding_hnsw;
