"""The operator API's OpenAPI 3 document (`/api/ops/openapi.json`): every dashboard action as JSON.

Kept apart from the customer document (`/api/openapi.json`): a customer's key opens none of
these, and the customer document lists only what a customer may call.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from domain.states import OPERATOR_ACTIONS
from web.dead_letters import ACTIONS as DEAD_LETTER_ACTIONS
from web.ops import FINDING_ACTIONS

bp = Blueprint("openapi_ops", __name__, url_prefix="/api/ops")

_ERROR = {"$ref": "#/components/schemas/Error"}
_ERRORS = {
    "401": "No operator credentials (an operator API key, or HTTP Basic for OPERATORS).",
    "403": "The credentials are a customer's, not an operator's.",
    "404": "No such exchange, finding, dead letter or action.",
    "409": "Refused: the state does not allow it, or the bank or broker cannot back it now (the message says why).",
    "422": "A field is invalid (named in `error.fields`).",
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code], "content": {"application/json": {"schema": _ERROR}}}
            for code in codes}


def _result(extra: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["action", "result", "operator", *extra],
            "properties": {"action": {"type": "string"}, "result": {"type": "string", "description": "What was done."},
                           "operator": {"type": "string"}, **extra}}


def _action(path_param: dict[str, Any] | None, actions: list[str], summary: str, status: str,
            extra: dict[str, Any], body: dict[str, Any] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary, "security": [{"operatorKey": []}, {"operatorBasic": []}],
        "parameters": [*([path_param] if path_param else []),
                       {"in": "path", "name": "action", "required": True,
                        "schema": {"type": "string", "enum": actions}}],
        "responses": {status: {"description": "Done", "content": {"application/json": {"schema": _result(extra)}}},
                      **_errors("401", "403", "404", "409", "422")},
    }
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {"schema": body}}}
    return {"post": operation}


def build_ops_spec() -> dict[str, Any]:
    uuid_path = {"in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    note = {"type": "object",
            "properties": {"note": {"type": "string", "description": "Required: why, or what was done."}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "fx-outbox operator API", "version": "1.0.0",
                 "description": "What the operations dashboard does, as JSON. Every action is one transaction, "
                                "written to the exchange's timeline and the audit trail (/ops/audit)."},
        "paths": {
            "/api/ops/exchanges/{exchange_id}/timeline": {"get": {
                "summary": "The full timeline: every step, attempt, outcome, worker and error, the latest trouble "
                           "first (the customer's timeline leaves these out)",
                "security": [{"operatorKey": []}, {"operatorBasic": []}],
                "parameters": [{"name": "exchange_id", **uuid_path}],
                "responses": {"200": {"description": "The timeline", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["id", "state", "events", "trouble", "last_error", "failure_code"],
                    "properties": {"id": {"type": "string", "format": "uuid"}, "state": {"type": "string"},
                                   "step": {"type": "string", "nullable": True}, "attempt": {"type": "integer"},
                                   "last_error": {"type": "string", "nullable": True},
                                   "failure_code": {"type": "string", "nullable": True},
                                   "trouble": {"type": "object", "nullable": True},
                                   "events": {"type": "array", "items": {"type": "object"}}}}}}},
                              **_errors("401", "403", "404")},
            }},
            "/api/ops/exchanges/{exchange_id}/actions/{action}": _action(
                {"name": "exchange_id", **uuid_path}, list(OPERATOR_ACTIONS),
                "Retry the current step, cancel before the debit, or force compensation after it", "202",
                {"exchange_id": {"type": "string", "format": "uuid"}}),
            "/api/ops/findings/{finding_id}/{action}": _action(
                {"name": "finding_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                list(FINDING_ACTIONS), "Acknowledge a ledger/bank finding with a note, or resolve it", "200",
                {"finding_id": {"type": "integer"}}, body=note),
            "/api/ops/dead-letters/{message_id}/{action}": _action(
                {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"}},
                list(DEAD_LETTER_ACTIONS), "Replay a dead-lettered step through the outbox, or delete the letter",
                "200", {"message_id": {"type": "string"}}),
            "/api/ops/dead-letters/all/{action}": _action(
                None, list(DEAD_LETTER_ACTIONS), "Replay or delete every dead letter (of one actor)", "200",
                {"actor": {"type": "string", "nullable": True}},
                body={"type": "object", "properties": {"actor": {"type": "string"}}}),
        },
        "components": {
            "securitySchemes": {
                "operatorKey": {"type": "http", "scheme": "bearer", "description": "An operator's API key"},
                "operatorBasic": {"type": "http", "scheme": "basic", "description": "OPERATORS name:password"},
            },
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "fields": {"type": "object", "additionalProperties": {
                                   "type": "array", "items": {"type": "string"}}}}}}}},
        },
    }


@bp.get("/openapi.json")
def ops_openapi_json() -> Response:
    return jsonify(build_ops_spec())
