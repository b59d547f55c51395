-- The claim index's predicate, `status IN ('scheduled', 'queued', 'delivery_delayed')`,
-- becomes the same test spelled as three comparisons. SQLite evaluates a partial index's
-- predicate for every row an INSERT or UPDATE touches (for an UPDATE, on the row before and
-- after), and it compiles an IN list of more than two values into a temporary B-tree that it
-- builds afresh at each evaluation: an accepted and delivered email built five of them (one
-- at its insert, two at its claim, two at its outcome), 15 of the 39 index insertions SQLite
-- made for each email (callgrind). Comparisons cost nothing of the kind. SQLite uses a
-- partial index only for a query whose WHERE holds its predicate term for term, so Herald's
-- queries spell it the same way (`store::pending!`).
DROP INDEX recipients_due;
CREATE INDEX recipients_due ON recipients (next_attempt_at)
    WHERE status = 'scheduled' OR status = 'queued' OR status = 'delivery_delayed';
