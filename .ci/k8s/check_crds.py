"""Checks the custom resources of a rendered manifest against the strict
schemas in crd-schemas.json, and writes the other objects out for
kubernetes-validate (which has no schema for a custom resource and would
only warn).

usage: check_crds.py RENDERED.yaml CORE_OUT.yaml [RULES_OUT.yaml]

With RULES_OUT, the groups of every PrometheusRule are also written there
as a plain Prometheus rules file (nothing is written when there is none),
for `promtool check rules` and `promtool test rules`.

A custom resource of an apiVersion/kind without a schema here is passed on
to kubernetes-validate, whose warning then fails the run: a new CRD needs
its schema added here first.
"""

import json
import pathlib
import sys

import jsonschema
import yaml

SCHEMAS = json.loads((pathlib.Path(__file__).parent / "crd-schemas.json").read_text())


def main(rendered: str, core_out: str, rules_out: str | None = None) -> int:
    docs = [d for d in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if d]
    core, errors, checked = [], [], 0
    for doc in docs:
        key = f"{doc.get('apiVersion')}/{doc.get('kind')}"
        schema = SCHEMAS.get(key)
        if schema is None:
            core.append(doc)
            continue
        checked += 1
        schema = dict(schema, definitions=SCHEMAS["definitions"])
        name = (doc.get("metadata") or {}).get("name", "?")
        for err in jsonschema.Draft7Validator(schema).iter_errors(doc):
            path = "/".join(str(p) for p in err.absolute_path)
            errors.append(f"ERROR {key} {name}: {path}: {err.message}")
    pathlib.Path(core_out).write_text(yaml.safe_dump_all(core, sort_keys=False))
    groups = [
        g
        for d in docs
        if d.get("kind") == "PrometheusRule"
        for g in ((d.get("spec") or {}).get("groups") or [])
    ]
    if rules_out and groups:
        pathlib.Path(rules_out).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    for e in errors:
        print(e)
    print(f"{checked} custom resources checked, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
