CREATE TABLE refunds (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders (id), reason TEXT);
CREATE INDEX refunds_by_order ON refunds (order_id);
