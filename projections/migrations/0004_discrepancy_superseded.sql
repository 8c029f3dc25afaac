-- A discrepancy that a later retroactive change explains is closed with status 'superseded'
-- (processor/batch.py, DiscrepancySuperseded). The initial CHECK allowed only 'open' and 'resolved', so
-- the batch holding such a change failed to commit and the processor stopped on it.
ALTER TABLE discrepancy DROP CONSTRAINT IF EXISTS discrepancy_status_check;
ALTER TABLE discrepancy ADD CONSTRAINT discrepancy_status_check
    CHECK (status IN ('open', 'resolved', 'superseded'));
