"""Lints and renders the Helm chart offline, and validates what it renders.

    helm_chart.py CHART VALUES_FILE

Uses Helm's own Go SDK (helm-python-sdk, which bundles it: no helm binary, no cluster) to lint
the chart with the values file and to render it as `helm template` would (release `dmcp`,
namespace `sandboxes`), then checks every rendered object of a built-in kind against the
Kubernetes OpenAPI schemas that kubernetes-validate bundles (strict: unknown fields are
errors). Custom resources (the ServiceMonitor) are left to the caller. Prints one JSON document
on stdout: {"lint": [...messages...], "objects": [{"template": ..., "object": ...}],
"validated": [kinds], "unvalidated": [kinds]}; exits non-zero on any lint error, render error
or schema violation, with the reason on stderr. Run by tests/api/deploy.rs with the venv of
tests/monitoring/setup.sh.
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
RELEASE = "dmcp"
NAMESPACE = "sandboxes"
# Kinds whose schemas are not Kubernetes' own (custom resources).
CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor")}


def main() -> int:
    chart_dir, values_file = sys.argv[1:3]
    with open(values_file, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}

    report = helm.lint(
        chart_dir, values, strict=True, namespace=NAMESPACE, kube_version="v" + KUBERNETES_VERSION
    )
    messages = report.get("messages") or []
    errors = [m for m in messages if m.get("severity", 0) >= 2] + [
        {"error": e} for e in report.get("errors") or []
    ]
    if errors:
        print(f"helm lint: {json.dumps(errors, indent=2)}", file=sys.stderr)
        return 1

    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)

    objects, validated, unvalidated, failures = [], [], [], []
    for template, text in sorted(manifests.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for index, obj in enumerate(yaml.safe_load_all(text)):
            if not obj:
                continue
            objects.append({"template": template, "object": obj})
            kind = (obj.get("apiVersion"), obj.get("kind"))
            if kind in CUSTOM:
                unvalidated.append(obj["kind"])
                continue
            try:
                kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
                validated.append(obj["kind"])
            except kubernetes_validate.ValidationError as e:
                failures.append(f"{template} #{index} ({obj.get('kind')}): {e.message} at {list(e.path)}")
            except Exception as e:  # an unknown kind or version is a failure too
                failures.append(f"{template} #{index} ({obj.get('kind')}): {e}")
    if failures:
        print("schema violations:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    json.dump(
        {"lint": messages, "objects": objects, "validated": validated, "unvalidated": unvalidated},
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
