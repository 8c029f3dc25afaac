"""One sentence for every event field, printed into the JSON Schemas and the AsyncAPI document.

``FIELDS`` describes a field name wherever it appears; ``BY_TYPE`` (``"<type>.<field>"``) wins where a
name means something else in one event type. A test fails when a field has neither, so a new field
arrives with its description.
"""

from __future__ import annotations

FIELDS: dict[str, str] = {
    # common to every event
    "type": "Event type tag; picks the schema of the rest of the message.",
    "event_id": "Idempotency key: the same id with the same body is a no-op, with a different body a"
    " loud error. Derive it from the producer's natural key.",
    "account_id": "Member account id, also the Kafka record key ('*' for broadcast events).",
    "effective_on": "Business date the event takes effect (ISO date).",
    "occurred_at": "When the upstream system recorded the fact (ISO 8601 date-time with zone). Not the"
    " order of processing: within a partition, records are applied in offset order.",
    "source": "The system that produced the event (e.g. payroll-AG-004, bank-820).",
    "causation_id": "event_id of the event that caused this one, if any.",
    "schema_version": "Version of this event type's schema; older versions are upcast on read.",
    # enrollment
    "member_id": "The covered member (subscriber or dependent); never an SSN.",
    "relationship": "The member's relationship to the subscriber.",
    "plan": "Plan code (e.g. DELTA-PPO).",
    "coverage_line": "Line of coverage: health, dental, vision, life, ltd, std, fsa or dcap.",
    "tier": "Coverage tier (e.g. EMP, ESP, ECH, FAM) that prices the subscriber's month.",
    "status": "Coverage status: active employee, COBRA continuation or retiree.",
    "benefit_begin": "First day of coverage.",
    "benefit_end": "Last day of coverage; absent while coverage continues.",
    "agency_id": "The paying agency (employer unit) that is billed for the coverage.",
    "elected_on": "COBRA: the day the member elected continuation coverage.",
    "cobra_start": "COBRA: the first month of continuation coverage.",
    "disability_extension": "COBRA: a disability extension (months 19 to 29 are priced higher).",
    "tax_dependent": "False for a dependent who is not a tax dependent (their share is post-tax, IRC 125).",
    "coverage_amount_cents": "Group-term life: the face amount in cents.",
    "birth_year": "Group-term life: the member's year of birth (IRS Table I age band).",
    # rates and bills
    "rate_id": "Identifier of the rate publication.",
    "month_from": "First coverage month (first day) the rate applies to.",
    "month_through": "Last coverage month (first day) the rate applies to; absent: open-ended.",
    "total_cents": "Total in cents.",
    "employee_cents": "The employee's share of the monthly premium, in cents.",
    "employer_cents": "The employer's contribution to the monthly premium, in cents.",
    "bill_id": "Identifier of the bill; a bill id is posted once.",
    "coverage_month": "The coverage month (its first day) the event is about.",
    "amount_cents": "Amount in integer cents (never a float).",
    "due_on": "Day the bill is due; a missing payment is judged from it plus the grace days.",
    # payments
    "payment_id": "Identifier of the payment.",
    "method": "How the money moved: payroll, ach, eft, check, direct or card.",
    "payer_id": "Who paid: an agency id or, for direct pay, the member's account.",
    "remittance_id": "The remittance (X12 820 transaction) the payment line belongs to.",
    "trace_number": "Payment trace number (X12 820 TRN02).",
    "tax_treatment": "How payroll took the deduction: pre_tax (cafeteria plan) or post_tax.",
    "pay_frequency": "Pay frequency of a payroll deduction (a biweekly one owes 12/26 of a month).",
    "billed_cents": "What the payer says was billed for the line (X12 820 RMR05), in cents.",
    "adjustments": "Adjustments on the remittance line (X12 820 ADX).",
    "refund_id": "Identifier of the refund.",
    "payee_id": "Who receives the money.",
    "application_id": "Identifier of the cash application (becomes the posted payment's payment_id).",
    "to_account_id": "Account the held cash is applied to.",
    "to_coverage_month": "Coverage month (first day) the held cash is applied to.",
    "adjustment_id": "Identifier of the adjustment.",
    "payment_date": "Day the payer made the payment (X12 820 BPR16).",
    "lines_total_cents": "Sum of the remittance's member lines (X12 820 RMR04), in cents.",
    "line_count": "Number of member lines in the remittance.",
    # control
    "business_date": "The business day that ended; time-driven rules are decided here.",
    "cycle_month": "Coverage month (first day) whose billing cycle closed.",
    # FSA
    "election_id": "Identifier of the election.",
    "plan_year": "Plan year, named by the calendar year it starts in.",
    "account_type": "Flexible spending account type: health or dependent_care.",
    "election_cents": "Annual election in cents.",
    "tax_filing_status": "Tax filing status; married_filing_separately halves the dependent-care limit.",
    "contribution_id": "Identifier of the contribution.",
    "claim_id": "Identifier of the claim; a claim id is adjudicated once.",
    "service_date": "Day the expense was incurred.",
    "description": "What the expense was for.",
    "decision": "approved, partially_approved or denied.",
    "requested_cents": "Amount the claim asked for, in cents.",
    "approved_cents": "Amount that will be reimbursed, in cents.",
    "available_before_cents": "Balance available before this claim, in cents.",
    "available_after_cents": "Balance available after this claim, in cents.",
    # discrepancies
    "discrepancy_id": "Deterministic id (account, finding, opening event): follow one discrepancy by it;"
    " a re-publish after a crash carries the same id.",
    "kind": "What is wrong; one of the fixed discrepancy kinds.",
    "expected_cents": "What the ledger expected, in cents.",
    "actual_cents": "What the ledger found, in cents.",
    "cause_event_ids": "event_ids of the events that caused the discrepancy.",
    "explanation": "One line saying what is wrong and why.",
    "actor": "Who must act: agency_coordinator, payroll, member, billing or accounts_staff.",
    "previous_expected_cents": "expected_cents before this change.",
    "previous_actual_cents": "actual_cents before this change.",
    "changing_event_ids": "event_ids of the events that moved the amounts.",
    "superseding_event_ids": "event_ids of the retroactive changes that explain the discrepancy.",
    "superseded_by": "discrepancy_id of the retroactive_change discrepancy that carries the difference now.",
    "resolving_event_ids": "event_ids of the events that closed the gap.",
    # issue 11: eligibility, COBRA maximum period, remittances the ledger reconciles itself
    "birth_date": "The covered person's date of birth (834 DMG02), for a dependent's age limit.",
    "missing_elements": "Situational elements the sender left out and the adapter could not derive, each with"
    " where it was missing (e.g. HD05 with file, line and segment).",
    "qualifying_event": "COBRA: what started the continuation (termination, reduced_hours, death, divorce,"
    " dependent_loss, medicare); it sets the maximum period (18, 29 or 36 months).",
    "qualifying_event_on": "COBRA: the date of the qualifying event the maximum period counts from.",
    "advice_only": "Remittance advice: no money moves with it; its lines are paid when the payment with its"
    " trace number arrives.",
    "pending_cents": "Dependent care: the part of the claim waiting for contributions, paid as they arrive.",
    "line_account_id": "The member account the remittance line was posted on.",
    "payment_ids": "The advice lines (payment ids) on this account that the money pays.",
    "funding_payment_id": "The payment on the payer's account that moved the advice's money.",
    # people's actions on discrepancies (the workbench)
    "user": "The login of the person who acted.",
    "role": "The role the person acted in: specialist, supervisor, auditor or agency_coordinator.",
    "assignee": "The login of the person who owns the discrepancy now; absent: nobody.",
    "note": "The note's text.",
    "work_status": "Where the work stands: waiting on the agency, waiting on the member, or in progress.",
    "request_event_id": "The event_id of the waiver or write-off that waits for approval.",
    "closing_event_ids": "event_ids of the actions that closed it (the request and its approval).",
    "adjustment_cents": "The adjustment posted on its month so the balance agrees, in signed cents.",
    # notices
    "notice_id": "Identifier of the notice (the same notice issued twice is one event).",
    "recipient": "Who the notice is to: the agency coordinator or the member.",
    "recipient_id": "The agency id (coordinator) or the member account id.",
    "discrepancy_ids": "The discrepancies whose actions the notice lists.",
    "known_at": "The recorded time R the notice was made as of: replay to R renders it again, byte for byte.",
    "document_sha256": "SHA-256 of the notice's HTML, to check a reproduction against.",
    "channel": "How it was sent: mail, email or portal.",
    "template_version": "Version of the notice template that rendered it.",
}

_ACTION_REASON = "Why the person acted (required for waivers, write-offs, dismissals, rejections and reopenings)."

BY_TYPE: dict[str, str] = {
    **{f"{tag}.reason": _ACTION_REASON for tag in (
        "discrepancy_assigned", "discrepancy_noted", "discrepancy_status_set", "discrepancy_waived",
        "discrepancy_written_off", "waiver_approved", "waiver_rejected", "retro_change_approved",
        "retro_change_rejected", "discrepancy_dismissed", "discrepancy_reopened", "discrepancy_closed")},
    "enrollment_changed.action": "What the change does: add, change, terminate or reinstate a coverage.",
    "enrollment_changed.reason": "Why the change was made (834 INS04, e.g. death).",
    "discrepancy_opened.action": "What should be done about it.",
    "discrepancy_amount_changed.action": "What should be done now, when that changed too (a retroactive change's"
    " refund or bill); absent in events recorded before it was carried.",
    "payment_reversed.reason": "Why the payment was reversed (returned, voided...).",
    "refund_issued.reason": "Why the money is paid back.",
    "refund_returned.reason": "Why the refund came back (returned check, rejected ACH...).",
    "cash_applied.reason": "Why the cash belongs there (the research finding).",
    "adjustment_posted.reason": "Why the billed amount is corrected.",
    "adjustment_posted.amount_cents": "Signed correction of the month's billed amount, in cents.",
    "adjustment_posted.plan": "Plan the correction belongs to, if one.",
    "fsa_claim_adjudicated.reason": "Why the decision is what it is (why less than requested).",
    "remittance_received.total_cents": "What the payer says it paid (X12 820 BPR02), in cents.",
    "rate_published.total_cents": "Monthly premium for the plan and tier, in cents.",
    "refund_issued.payment_id": "A held payment returned whole (absent for a month's credit).",
    "refund_issued.coverage_month": "The month whose credit is refunded (absent for held cash).",
    "cash_applied.payment_id": "The held (unapplied) payment that is applied.",
    "remittance_adjustment.reason": "Adjustment reason code (X12 820 ADX02).",
    "remittance_adjustment.amount_cents": "Adjustment amount (X12 820 ADX01), signed cents.",
}


def describe(tag: str, field: str) -> str | None:
    """The description of ``field`` in event type ``tag``, or None when there is none."""
    return BY_TYPE.get(f"{tag}.{field}") or FIELDS.get(field)
