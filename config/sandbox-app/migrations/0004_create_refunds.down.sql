DROP INDEX refunds_by_order;
DROP TABLE refunds;
