#!/usr/bin/env python3
"""Fails if the REST contract shrank between two OpenAPI documents (routes are invisible to `buf breaking`).

    scripts/openapi-grows.py OLD.json NEW.json

Breaking, per operation: a removed path or method, a removed parameter, a parameter that became required, a
changed parameter location. Per schema: a removed schema, property or enum value, or a property that became
required in a request-side schema. Additions are fine.
"""

import json
import sys


def main():
    old, new = (json.load(open(p)) for p in sys.argv[1:3])
    problems = []
    for path, item in old.get("paths", {}).items():
        for method, op in item.items():
            new_op = new.get("paths", {}).get(path, {}).get(method)
            if new_op is None:
                problems.append(f"operation removed: {method.upper()} {path}")
                continue
            new_params = {(p["in"], p["name"]): p for p in new_op.get("parameters", [])}
            for p in op.get("parameters", []):
                q = new_params.get((p["in"], p["name"]))
                if q is None:
                    problems.append(f"{method.upper()} {path}: parameter {p['name']} ({p['in']}) removed")
                elif q.get("required") and not p.get("required"):
                    problems.append(f"{method.upper()} {path}: parameter {p['name']} became required")
            old_names = {(p["in"], p["name"]) for p in op.get("parameters", [])}
            for key, q in new_params.items():
                if key not in old_names and q.get("required"):
                    problems.append(f"{method.upper()} {path}: new required parameter {key[1]}")
    old_schemas = old.get("components", {}).get("schemas", {})
    new_schemas = new.get("components", {}).get("schemas", {})
    for name, schema in old_schemas.items():
        other = new_schemas.get(name)
        if other is None:
            problems.append(f"schema removed: {name}")
            continue
        for prop in schema.get("properties", {}):
            if prop not in other.get("properties", {}):
                problems.append(f"{name}: property {prop} removed")
        newly_required = set(other.get("required", [])) - set(schema.get("required", []))
        for prop in sorted(newly_required):
            problems.append(f"{name}: property {prop} became required")
        check_enums(name, schema, other, problems)
    for problem in problems:
        print(f"openapi-grows: {problem}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"openapi-grows: ok ({len(new.get('paths', {}))} paths, {len(new_schemas)} schemas)")


def check_enums(where, old, new, problems):
    """Enum values may only be added, anywhere in a schema (enums are inlined in properties)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "enum" in old:
            removed = [v for v in old["enum"] if v not in new.get("enum", [])]
            if removed:
                problems.append(f"{where}: enum values removed: {removed}")
        for key, value in old.items():
            if key in new:
                check_enums(f"{where}.{key}", value, new[key], problems)
    elif isinstance(old, list) and isinstance(new, list):
        for i, (a, b) in enumerate(zip(old, new)):
            check_enums(f"{where}[{i}]", a, b, problems)


if __name__ == "__main__":
    main()
