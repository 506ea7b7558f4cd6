-- A two-minute tour of Flywheel's SQL (the README's tour): cargo run -- --warehouse /tmp/tour sql -f examples/quickstart.sql
DROP TABLE IF EXISTS clicks;
CREATE TABLE clicks (user_id BIGINT, ts TIMESTAMP, page VARCHAR);
INSERT INTO clicks VALUES (1, '2026-11-01T10:00:00', 'home'), (2, '2026-11-01T10:05:00', 'cart');
INSERT INTO clicks VALUES (1, '2026-11-01T11:00:00', 'checkout');
SELECT user_id, count(*) AS clicks, max(ts) AS last_seen FROM clicks GROUP BY user_id ORDER BY user_id;
-- The CREATE and each INSERT were Delta commits (versions 0, 1, 2); read version 1, the table after the first insert.
SELECT * FROM clicks VERSION AS OF 1 ORDER BY ts;
