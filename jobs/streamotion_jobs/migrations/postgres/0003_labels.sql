-- The label set of each classification, beside the stored emotion (its first label): a
-- multi-label head's labels over their thresholds (strongest first), else its top label; a
-- single-label head's top label. Rows written before this migration have an empty set.
ALTER TABLE events ADD COLUMN labels text[] NOT NULL DEFAULT '{}';
ALTER TABLE event_scores ADD COLUMN labels text[] NOT NULL DEFAULT '{}';
