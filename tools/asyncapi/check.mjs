// Parse an AsyncAPI document with the official parser and print its diagnostics as one JSON document:
// {"errors": [...], "warnings": [...], "infos": [...], "hints": [...]}. Exit 0 when there are no errors
// and no warnings, 1 otherwise. Usage: node tools/asyncapi/check.mjs docs/asyncapi.json
import { readFile } from "node:fs/promises";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const path = process.argv[2];
const text = await readFile(path, "utf8");
const parser = new Parser();
const { document, diagnostics } = await parser.parse(text, { source: path });
const by = { errors: [], warnings: [], infos: [], hints: [] };
const names = {
  [DiagnosticSeverity.Error]: "errors",
  [DiagnosticSeverity.Warning]: "warnings",
  [DiagnosticSeverity.Information]: "infos",
  [DiagnosticSeverity.Hint]: "hints",
};
for (const d of diagnostics) {
  by[names[d.severity]].push({ code: d.code, message: d.message, path: (d.path || []).join(".") });
}
by.parsed = document !== undefined;
by.version = document ? document.version() : null;
console.log(JSON.stringify(by));
process.exit(by.errors.length === 0 && by.warnings.length === 0 && by.parsed ? 0 : 1);
