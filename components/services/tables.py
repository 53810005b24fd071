"""PLACEHOLDER until the assembler lands (helper wt-asm)."""
from components.render import render_template
NAME = "tables"
def assembler_script(host_name: str, vmail_uid: int) -> str:
    return render_template("tables/assemble.sh.j2", host_name=host_name, vmail_uid=vmail_uid)
