CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    options TEXT NOT NULL,
    tag TEXT,
    webhook_url TEXT,
    priority INTEGER NOT NULL,
    review_threshold REAL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
CREATE TABLE IF NOT EXISTS documents (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    doc INTEGER NOT NULL,
    page INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    result TEXT,
    min_confidence REAL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, doc, page)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    payload_hash TEXT NOT NULL,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, seq);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    next_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(state, next_at);
-- Rows as the first release left them: a selected-pages job mid-work and a hybrid job.
INSERT INTO jobs VALUES ('old', 'processing', '{"pages":"2-3,5"}', 'legacy', NULL, 0, NULL, 1000, 1500);
INSERT INTO documents VALUES ('old', 0, 'a.pdf', '/tmp/old-0.bin', '00');
INSERT INTO pages (job_id, doc, page, state, attempts, result, updated_at) VALUES
    ('old', 0, 0, 'completed', 1, '{"width":1,"height":1,"lines":[]}', 1200),
    ('old', 0, 1, 'processing', 1, NULL, 1300),
    ('old', 0, 2, 'queued', 0, NULL, 1000);
INSERT INTO jobs VALUES ('hyb', 'queued', '{"interactive":true}', NULL, NULL, 0, NULL, 2000, 2000);
INSERT INTO documents VALUES ('hyb', 0, 'document', '/tmp/hyb-0.bin', '00');
INSERT INTO pages (job_id, doc, page, state, attempts, updated_at) VALUES ('hyb', 0, 0, 'queued', 0, 2000);
