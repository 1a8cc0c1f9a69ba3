-- The transactional outbox: an event row is written by the same transaction as the change
-- that causes it, so a crash can never change a state and lose its event. Deliveries read
-- it from here. AUTOINCREMENT: ids never come back, so "after id" stays true.

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at REAL NOT NULL
);
