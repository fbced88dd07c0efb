"""peercall's own import-linter contract type: a closed set of modules that imports nothing but itself, the
standard library and a few named packages. Registered in pyproject.toml (`[tool.importlinter] contract_types`);
`lint-imports` finds it because it puts the working directory on sys.path.

import-linter's built-in `forbidden` contract takes a deny-list, which a new dependency slips past; this is the
allow-list that "the pure layer imports only the standard library and msgspec" means.
"""

from __future__ import annotations

import sys

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck
from importlinter.domain.helpers import module_expressions_to_modules


class ClosedContract(Contract):
    """`modules` (with their descendants) and `exact_modules` (alone) may import one another, the standard library
    and `allowed_externals` (top-level package names), and nothing else, directly. Indirect imports need no check:
    whatever a member imports is a member, the standard library or an allowed external.
    """

    type_name = "closed"

    modules = fields.SetField(subfield=fields.ModuleExpressionField())
    exact_modules = fields.SetField(subfield=fields.ModuleExpressionField(), required=False)
    allowed_externals = fields.SetField(subfield=fields.StringField(), required=False)

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        members = module_expressions_to_modules(graph, self.modules, as_packages=True, raise_if_unmatched=True)  # type: ignore[arg-type]
        members |= module_expressions_to_modules(graph, self.exact_modules or (), raise_if_unmatched=True)  # type: ignore[arg-type]
        names = {m.name for m in members}
        allowed = set(sys.stdlib_module_names) | set(self.allowed_externals or ())  # type: ignore[arg-type]
        illegal = []
        for importer in sorted(names):
            for imported in sorted(graph.find_modules_directly_imported_by(importer)):
                if imported in names or imported.split(".")[0] in allowed:
                    continue
                details = graph.get_import_details(importer=importer, imported=imported)
                lines = ", ".join(f"l.{d['line_number']}" for d in details)
                illegal.append({"importer": importer, "imported": imported, "lines": lines})
        return ContractCheck(kept=not illegal, metadata={"illegal": illegal})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for entry in check.metadata["illegal"]:
            output.print_error(f"{entry['importer']} -> {entry['imported']} ({entry['lines']})", bold=False)
