"""Turn a CustomResourceDefinition's openAPIV3Schema into a strict JSON schema (draft 7) for offline validation.

    python tests/unit/schemas/crd_to_json_schema.py keda.sh_scaledobjects.yaml v1alpha1 \
        > tests/unit/schemas/keda-scaledobject-v1alpha1.json

Strict as kubernetes-validate's strict schemas are: an object with `properties` and no `additionalProperties`
takes no other field (the API server prunes unknown fields of a structural schema silently; here they fail).
"""
from __future__ import annotations

import json
import sys
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "format"}
    if node.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def main(path: str, version: str) -> None:
    crd = yaml.safe_load(open(path))
    spec = crd["spec"]
    served = next(v for v in spec["versions"] if v["name"] == version)
    schema = strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    schema["properties"]["apiVersion"] = {"const": f"{spec['group']}/{version}"}
    schema["properties"]["kind"] = {"const": spec["names"]["kind"]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    schema = {"$schema": "http://json-schema.org/draft-07/schema#",
              "$comment": f"{spec['names']['kind']} {spec['group']}/{version}, from {path} by "
                          "tests/unit/schemas/crd_to_json_schema.py", **schema}
    json.dump(schema, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
