"""``autotune completion bash|zsh``: a shell completion script made from the parser itself, so it
never falls behind the commands and flags.

    eval "$(autotune completion bash)"     # in ~/.bashrc; zsh: eval "$(autotune completion zsh)"
"""

from __future__ import annotations

import argparse

TEMPLATE = """_autotune() {
    local cur="${COMP_WORDS[COMP_CWORD]}" command="${COMP_WORDS[1]}" options=""
    if [[ $COMP_CWORD -eq 1 ]]; then
        COMPREPLY=( $(compgen -W "%(commands)s" -- "$cur") )
        return
    fi
    case "$command" in
%(cases)s
    esac
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "$options" -- "$cur") )
    else
        COMPREPLY=( $(compgen -f -- "$cur") )
    fi
}
complete -o filenames -F _autotune autotune
"""
ZSH_PREAMBLE = "autoload -U +X bashcompinit && bashcompinit\n"


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script of ``parser``'s commands and options for ``shell``."""
    commands = parser._subparsers._group_actions[0].choices
    cases = []
    for name, sub in commands.items():
        flags = sorted({flag for action in sub._actions for flag in action.option_strings})
        cases.append(f'        {name}) options="{" ".join(flags)}" ;;')
    body = TEMPLATE % {"commands": " ".join([*commands, "--help", "--version"]), "cases": "\n".join(cases)}
    return (ZSH_PREAMBLE if shell == "zsh" else "") + body


def run_completion(args) -> dict:
    text = script(args.parser, args.shell)
    print(text, end="")
    return {"shell": args.shell}


def add_completion(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (eval it in your shell's rc)")
    p.add_argument("shell", choices=["bash", "zsh"])
    p.set_defaults(func=run_completion, json=False)
