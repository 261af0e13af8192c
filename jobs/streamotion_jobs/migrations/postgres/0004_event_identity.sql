-- Event identity is per pipeline source: event_id becomes source:platform:id (it was platform:id, so
-- two sources sending one platform id kept only the first source's event). Existing rows are rewritten
-- once; the WHERE clause touches only rows in the old form (source:platform:id never equals platform:id).
UPDATE events SET event_id = source || ':' || event_id
WHERE event_id = platform || ':' || id;

-- Re-scored results follow their events (event_scores has the source; its ids are all in the old form).
UPDATE event_scores SET event_id = source || ':' || event_id;
