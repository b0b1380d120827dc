"""Marshmallow schemas of the support API under /admin."""
from __future__ import annotations

from datetime import datetime

from marshmallow import Schema, ValidationError, fields, validate

from api.schemas import INT32_MAX, RequestSchema, StepSchema, text

SAGA_STATUSES = ["RUNNING", "COMPENSATING", "COMPLETED", "COMPENSATED", "FAILED"]
ACTIONS = ["retry", "resume", "skip", "compensate", "cancel"]
# The year as written, 1970 to 9998: any offset then has a UTC instant to compare with (year 1 or 9999 with an
# offset may not); the pattern says the same in the OpenAPI document.
FIRST_YEAR, LAST_YEAR = 1970, 9998
YEAR_PATTERN = r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
TIME_RULE = f"an ISO 8601 date-time with an offset, in the years {FIRST_YEAR} to {LAST_YEAR}"


def in_time_range(value: datetime) -> None:
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValidationError(f"must be {TIME_RULE}")


def time_filter(description: str) -> fields.AwareDateTime:
    return fields.AwareDateTime(validate=in_time_range, metadata={
        "description": f"{description} ({TIME_RULE})", "pattern": YEAR_PATTERN})


class SagaFilterSchema(Schema):
    status = fields.List(fields.String(validate=validate.OneOf(SAGA_STATUSES)), load_default=[],
                         validate=validate.Length(max=len(SAGA_STATUSES)),
                         metadata={"description": "one or more (repeat the parameter)"})
    kind = fields.String(validate=validate.OneOf(["order", "cancel"]))
    failing_step = text(32, 1, line=True, metadata={"description": "the saga's latest step that failed for good"})
    error = text(200, 1, line=True, metadata={"description": "text in the saga's reason or a step's error, any case"})
    order_id = fields.Integer(validate=validate.Range(1, INT32_MAX))
    customer_id = fields.Integer(validate=validate.Range(1, INT32_MAX))
    since = time_filter("created at or after")
    until = time_filter("created before")


class SagaSummarySchema(Schema):
    id = fields.Integer()
    kind = fields.String()
    status = fields.String()
    order_id = fields.Integer()
    customer_id = fields.Integer()
    failing_step = fields.String(allow_none=True)
    error = fields.String(allow_none=True, metadata={"description": "the failing step's error"})
    reason = fields.String(allow_none=True)
    cancel_requested = fields.Boolean()
    recoveries = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class CountsSchema(Schema):
    by_status = fields.Dict(keys=fields.String(), values=fields.Integer())
    by_failing_step = fields.Dict(keys=fields.String(), values=fields.Integer())


class AttemptSchema(Schema):
    attempt = fields.Integer(metadata={"description": "its number (a BLOCKED attempt gives it back)"})
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)
    outcome = fields.String(metadata={"enum": ["SUCCEEDED", "COMPENSATED", "FAILED", "BLOCKED", "LOST"]})
    error = fields.String(allow_none=True)
    task_id = fields.String(allow_none=True)
    flower_url = fields.String(allow_none=True, metadata={
        "description": "the attempt's task in Flower (FLOWER_URL/task/<task_id>); null without FLOWER_URL"})
    provider_ref = fields.String(allow_none=True)
    outcome_unknown = fields.Boolean()


class TimelineStepSchema(StepSchema):
    local = fields.Boolean(metadata={"description": "calls no provider: its row is its one attempt"})
    outcome_unknown = fields.Boolean()
    waited_s = fields.Float()
    attempts_list = fields.List(fields.Nested(AttemptSchema), data_key="attempt_history")


class AuditEntrySchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    actor = fields.String()
    role = fields.String()
    action = fields.String()
    saga_id = fields.Integer(allow_none=True)
    step = fields.String(allow_none=True)
    bulk_token = fields.String(allow_none=True)
    reason = fields.String()
    state_before = fields.String(allow_none=True)
    state_after = fields.String(allow_none=True)
    outcome = fields.String(metadata={"enum": ["done", "refused"]})
    detail = fields.String(allow_none=True)


class StateChangeSchema(Schema):
    at = fields.DateTime()
    status = fields.String()
    by = fields.String(metadata={"description": "the saga itself, or the support action that changed it"})


class TimelineSchema(SagaSummarySchema):
    state = fields.String(metadata={"description": "status, with the failing step: FAILED:pay"})
    steps = fields.List(fields.Nested(TimelineStepSchema))
    state_changes = fields.List(fields.Nested(StateChangeSchema))
    audit = fields.List(fields.Nested(AuditEntrySchema))
    actions = fields.List(fields.String(), metadata={"description": "the actions its state allows now"})


class ActionSchema(RequestSchema):
    reason = text(500, 3, required=True, metadata={"description": "why: kept in the audit log"})
    step = text(32, 1, line=True, metadata={"description": "resume: the step to run again"})


class ActionResultSchema(Schema):
    saga_id = fields.Integer()
    action = fields.String()
    state_before = fields.String()
    state_after = fields.String()
    audit_id = fields.Integer()
    started_saga_id = fields.Integer(allow_none=True)


class BulkPlanRequestSchema(RequestSchema):
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    reason = text(500, 3, required=True)
    step = text(32, 1, line=True)
    filter = fields.Nested(SagaFilterSchema, required=True)


class PlannedSagaSchema(Schema):
    saga_id = fields.Integer()
    state = fields.String(metadata={"description": "as the dry run saw it; the run skips a saga no longer in it"})


class BulkProgressSchema(Schema):
    token = fields.String()
    action = fields.String()
    step = fields.String(allow_none=True)
    reason = fields.String()
    filter = fields.Dict()
    total = fields.Integer()
    done = fields.Integer()
    touched = fields.Integer()
    skipped = fields.Integer()
    finished = fields.Boolean()
    created_by = fields.String()
    created_at = fields.DateTime()
    expires_at = fields.DateTime()
    sagas = fields.List(fields.Nested(PlannedSagaSchema))
    results = fields.List(fields.Dict())


class BulkPageQuerySchema(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(1, 100_000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(1, 1000))


class BulkRunSchema(RequestSchema):
    batch_size = fields.Integer(load_default=50, validate=validate.Range(1, 100))


class AuditQuerySchema(Schema):
    saga_id = fields.Integer(validate=validate.Range(1, INT32_MAX))
    bulk_token = text(64, 1, line=True)


class WhoamiSchema(Schema):
    name = fields.String()
    role = fields.String(metadata={"enum": ["support", "viewer"]})


class DefinitionStepSchema(Schema):
    name = fields.String()
    provider = fields.String(allow_none=True, metadata={"description": "null: a change to our database only"})
    compensation = fields.String(allow_none=True, metadata={"description": "the step that undoes it"})
    best_effort = fields.Boolean()


class DefinitionSchema(Schema):
    kind = fields.String()
    version = fields.Integer()
    steps = fields.List(fields.Nested(DefinitionStepSchema))
    compensations = fields.List(fields.String(), metadata={"description": "the steps of the undoing phase"})
