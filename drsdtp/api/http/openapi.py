"""The OpenAPI 3.1 document of the HTTP/JSON face, generated from the service's own method table (the proto
descriptor), so it cannot drift from what the node serves: one path per method, request and reply schemas
following protobuf's canonical JSON mapping (lowerCamelCase names, 64-bit integers as strings, enums by
name, ``bytes`` as base64), the error body, and Watch as server-sent events.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor

from drsdtp.api.auth import required_role
from drsdtp.api.http.errors import HTTP_STATUS

__all__ = ["PREFIX", "is_read", "openapi_document"]

PREFIX = "/api/v2"
_READ_PREFIXES = ("Get", "List", "Read")

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": ["number", "string"], "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": ["number", "string"], "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings (JavaScript numbers lose precision) and reads both.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}


def is_read(method: MethodDescriptor) -> bool:
    """Methods that change nothing (named so, or open to viewers), also served as GET with the request's
    fields in the query string."""
    return method.name.startswith(_READ_PREFIXES) or required_role(method.name) == "viewer"


def _field_schema(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value, schemas)}
    single = _single(field, schemas)
    if field.is_repeated:
        return {"type": "array", "items": single}
    return single


def _single(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        _add_message(field.message_type, schemas)
        return {"$ref": f"#/components/schemas/{field.message_type.name}"}
    if field.enum_type is not None:
        return {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    return dict(_SCALARS[field.type])


def _add_message(message: Descriptor, schemas: dict[str, Any]) -> None:
    if message.name in schemas:
        return
    schemas[message.name] = {}  # placed first: a recursive message refers to itself
    properties = {field.json_name: _field_schema(field, schemas) for field in message.fields}
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    oneofs = [o for o in message.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(f.json_name for f in o.fields)}" for o in oneofs
        )
    schemas[message.name] = schema


def _query_parameters(message: Descriptor) -> list[dict[str, Any]]:
    """The request's scalar fields (and repeated scalars, as repeated parameters) as query parameters."""
    params = []
    for field in message.fields:
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            continue
        schema = _single(field, {})
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        params.append(
            {"name": field.name, "in": "query", "required": False, "schema": schema, "explode": True}
        )
    return params


def _error_responses() -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    statuses = sorted({s for s in HTTP_STATUS.values() if s != 200})
    return {str(s): {"description": "the call failed (see code)", **ref} for s in statuses}


def openapi_document(service: ServiceDescriptor, version: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "the gRPC status code name, as the gRPC face"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the request field that was wrong"},
                "details": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    }
    paths: dict[str, Any] = {}
    for method in service.methods:
        _add_message(method.input_type, schemas)
        _add_message(method.output_type, schemas)
        request_ref = {"$ref": f"#/components/schemas/{method.input_type.name}"}
        reply_ref = {"$ref": f"#/components/schemas/{method.output_type.name}"}
        body = {"required": False, "content": {"application/json": {"schema": request_ref}}}
        if method.server_streaming:
            ok = {
                "description": (
                    f"server-sent events: each event's data is one {method.output_type.name} (JSON), its id "
                    "the change's cursor; reconnecting with Last-Event-ID resumes after it"
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
            params = [
                *_query_parameters(method.input_type),
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "resume after this cursor (what EventSource sends on reconnecting)",
                },
            ]
            responses = {"200": ok, **_error_responses()}
            paths[f"{PREFIX}/{method.name}"] = {
                "get": {"operationId": method.name, "parameters": params, "responses": responses},
                "post": {"operationId": f"{method.name}Post", "requestBody": body, "responses": responses},
            }
            continue
        ok = {"description": method.output_type.name, "content": {"application/json": {"schema": reply_ref}}}
        responses = {"200": ok, **_error_responses()}
        item: dict[str, Any] = {
            "post": {"operationId": method.name, "requestBody": body, "responses": responses}
        }
        if is_read(method):
            item["get"] = {
                "operationId": f"{method.name}Get",
                "parameters": _query_parameters(method.input_type),
                "responses": responses,
            }
        paths[f"{PREFIX}/{method.name}"] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "drsdtp application API (HTTP/JSON face)",
            "version": version,
            "description": (
                "The methods of drsdtp.wire.v1.TwinApi over HTTP: POST a request message as JSON (protobuf's "
                "canonical JSON mapping) to /api/v2/<Method>; reads also answer GET with the request's "
                "fields as query parameters. Errors carry the gRPC code of the same failure."
            ),
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
