-- A two-minute tour of Flywheel's SQL (run: cargo run -- --warehouse /tmp/fw-tour sql -f examples/quickstart.sql)
DROP TABLE IF EXISTS clicks;
CREATE TABLE clicks (user_id BIGINT, ts TIMESTAMP, page VARCHAR);
INSERT INTO clicks VALUES (1, '2026-11-01T10:00:00', 'home'), (2, '2026-11-01T10:05:00', 'cart');
INSERT INTO clicks VALUES (1, '2026-11-01T11:00:00', 'checkout');
SELECT user_id, count(*) AS clicks, max(ts) AS last_seen FROM clicks GROUP BY user_id ORDER BY user_id;
-- Every statement above was a Delta commit; read the table as it was after the first insert.
SELECT * FROM clicks VERSION AS OF 1 ORDER BY ts;
