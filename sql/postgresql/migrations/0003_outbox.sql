-- The transactional outbox: an event row is written by the same transaction as the change
-- that causes it, so a crash can never change a state and lose its event. Deliveries read
-- it from here.

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type text NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
