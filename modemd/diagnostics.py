"""What every trio task is blocked in: for diagnosing a stall (a stuck test, a soak that stopped)."""

from __future__ import annotations

import trio


def _frames(coro: object) -> str:
    out = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            out.append(type(coro).__name__)
            break
        out.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return " > ".join(out)


def task_tree() -> str:
    """Every task of the running trio loop, indented by nursery, with its chain of awaits."""
    lines: list[str] = []

    def walk(task: trio.lowlevel.Task, depth: int) -> None:
        lines.append("  " * depth + f"{task.name.rsplit('.', 1)[-1]}: {_frames(task.coro)}")
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child, depth + 1)

    walk(trio.lowlevel.current_root_task(), 0)
    return "\n".join(lines)
