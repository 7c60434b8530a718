"""The --format templates docker users type, rendered as docker renders them."""

from __future__ import annotations

import pytest

from pallet.cli.template import TemplateError, align, render, render_table

INSPECT = {
    "Name": "/web",
    "State": {"Pid": 4242, "Running": True, "Status": "running"},
    "Config": {"Labels": {"app": "shop", "tier": "web"}, "Cmd": ["sleep", "30"],
               "Env": ["A=1", "B=2"], "Entrypoint": None},
    "NetworkSettings": {"Networks": {"front": {"IPAddress": "10.230.0.2"},
                                     "back": {"IPAddress": "10.230.1.2"}}},
}


@pytest.mark.parametrize("template, expected", [
    ("{{.State.Pid}}", "4242"),
    ("{{.Name}} {{.State.Running}}", "/web true"),
    ("{{json .Config.Labels}}", '{"app":"shop","tier":"web"}'),
    ("{{json .State}}", '{"Pid":4242,"Running":true,"Status":"running"}'),
    ("{{.Config.Cmd}}", "[sleep 30]"),
    ("{{.Config.Labels}}", "map[app:shop tier:web]"),
    ("{{.Config.Nope}}", "<no value>"),
    ("{{index .Config.Labels \"tier\"}}", "web"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.230.1.2 10.230.0.2 "),
    ("{{range $name, $n := .NetworkSettings.Networks}}{{$name}}={{$n.IPAddress}};{{end}}",
     "back=10.230.1.2;front=10.230.0.2;"),
    ("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}} {{end}}", "0:A=1 1:B=2 "),
    ("{{join .Config.Cmd \" \"}}", "sleep 30"),
    ("{{.State.Status | upper}}", "RUNNING"),
    ("{{if .State.Running}}up{{else}}down{{end}}", "up"),
    ("{{if eq .State.Status \"exited\"}}x{{else if .State.Running}}r{{else}}?{{end}}", "r"),
    ("{{with .Config.Entrypoint}}has{{else}}none{{end}}", "none"),
    ("{{len .Config.Env}}", "2"),
    ("{{printf \"%s-%d\" .Name .State.Pid}}", "/web-4242"),
    ("a\\tb\\n", "a\tb\n"),
    ("{{- .Name -}}  ", "/web"),
    ("{{/* a comment */}}x", "x"),
    ("{{(index .NetworkSettings.Networks \"front\").IPAddress}}", "10.230.0.2"),
])
def test_inspect_templates_render_like_docker(template, expected):
    assert render(template, INSPECT) == expected


def test_methods_take_arguments():
    row = {"Names": "web", "Label": lambda k: {"app": "shop"}.get(k, "")}
    assert render('{{.Names}} {{.Label "app"}}{{.Label "x"}}', row) == "web shop"


@pytest.mark.parametrize("template", ["{{.Name", "{{if .Name}}x", "{{end}}", "{{nosuchfunc .A}}",
                                      "{{range}}{{end}}"])
def test_bad_templates_are_errors(template):
    with pytest.raises(TemplateError):
        render(template, INSPECT)


def test_unknown_field_of_a_row_is_an_error_when_strict():
    with pytest.raises(TemplateError, match="can't evaluate field Bogus"):
        render("{{.Bogus}}", {"ID": "x"}, strict=True)


def test_table_has_a_header_and_aligned_columns():
    rows = [{"ID": "abc", "Names": "first-container"}, {"ID": "defghi", "Names": "b"}]
    out = render_table("{{.ID}}\t{{.Names}}", rows, {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert out.splitlines() == ["CONTAINER ID   NAMES",
                                "abc            first-container",
                                "defghi         b"]


def test_align_pads_like_tabwriter():
    assert align("A\tB\nlonger\tC") == "A         B\nlonger    C"


def test_missing_map_key_through_index_is_empty_and_json_skips_methods():
    assert render('{{index .Config.Labels "nope"}}', INSPECT) == ""
    row = {"Names": "web", "Label": lambda k: ""}
    assert render("{{json .}}", row) == '{"Names":"web"}'
