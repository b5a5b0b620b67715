"""Each API's OpenAPI document lists the query parameters its code reads: a parameter added
to one and not the other is a document that lies (schemathesis and client generators read
the document)."""

from __future__ import annotations

from typing import Any

from signalgate.datastorage import openapi as ds_openapi
from signalgate.datastorage.query import PARAMETERS
from signalgate.gateway import openapi as gw_openapi
from signalgate.gateway.app import LIST_PARAMETERS


def query_parameters(document: dict[str, Any], path: str) -> list[str]:
    operation = document["paths"][path]["get"]
    found = []
    for parameter in operation["parameters"]:
        if "$ref" in parameter:
            name = parameter["$ref"].rsplit("/", 1)[1]
            parameter = document["components"]["parameters"][name]
        if parameter["in"] == "query":
            found.append(parameter["name"])
    return found


def test_the_rr_list_documents_every_parameter_it_reads() -> None:
    document = gw_openapi.openapi_document()
    assert sorted(query_parameters(document, "/api/v1/remediation-requests")) == sorted(
        LIST_PARAMETERS
    )


def test_the_audit_query_documents_every_parameter_it_reads() -> None:
    document = ds_openapi.openapi_document()
    assert sorted(query_parameters(document, "/api/v1/audit/events")) == sorted(PARAMETERS)


def test_every_operation_lists_what_the_connection_layer_may_answer() -> None:
    for document in (gw_openapi.openapi_document(), ds_openapi.openapi_document()):
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                missing = {"400", "405", "415", "431", "500", "501"} - set(operation["responses"])
                assert not missing, (path, method, missing)
