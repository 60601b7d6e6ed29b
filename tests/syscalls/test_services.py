"""A process asks for services by type: the system offers its memory, the workspace's file index
and the document reader under their types' names, made on first use."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.documents import Documents
from llmos.errors import ErrorCode, LlmosError
from llmos.memory.files import FileIndex
from llmos.memory.memory import Memory
from llmos.security.capabilities import CapabilitySet
from llmos.security.workspace import Workspace
from llmos.syscalls.context import Process, Services, type_name
from llmos.syscalls.services import FilesByMeaning, Memories
from llmos.system import System


def test_a_spawned_process_gets_the_systems_services_by_type(
    system: System, workspace: Path
) -> None:
    proc = system.spawn("t", workspace)
    assert not system.memory_opened, "offering memory opens nothing"
    assert proc.services.get(Memory) is system.memory
    assert proc.services.get(Documents) is system.documents
    files = proc.services.get(FileIndex)
    assert isinstance(files, FileIndex) and files is proc.services.get(FileIndex)


def test_a_process_without_services_says_so(system: System, workspace: Path) -> None:
    bare = Process(
        name="bare", workspace=Workspace(workspace), caps=CapabilitySet(system.authority)
    )
    assert bare.services.get(Memory) is None and bare.services.get(Documents) is None
    result = system.dispatch(bare, {"call": "mem.search", "query": "x"})
    assert not result.ok and result.code in (ErrorCode.E_NOSYS, ErrorCode.E_PERM)


def test_a_service_of_the_wrong_type_is_refused() -> None:
    services = Services({type_name(Memory): lambda: "not a memory"})
    with pytest.raises(LlmosError) as out:
        services.get(Memory)
    assert out.value.code is ErrorCode.E_INTERNAL and "str" in out.value.message


def test_a_family_gets_memory_and_the_file_index_by_their_protocols(
    system: System, workspace: Path
) -> None:
    """The families ask by protocol (they may not import memory): the same instances come."""
    proc = system.spawn("t", workspace)
    assert proc.services.get(Memories) is proc.services.get(Memory) is system.memory
    files = proc.services.get(FilesByMeaning)
    assert files is proc.services.get(FileIndex) and isinstance(files, FileIndex)


def test_a_service_that_lacks_a_protocols_methods_is_refused() -> None:
    services = Services({type_name(Memories): lambda: object()})
    with pytest.raises(LlmosError) as out:
        services.get(Memories)
    assert out.value.code is ErrorCode.E_INTERNAL
