"""Lost on the line: command lines the module never sees (or sees glued), answers it prints that
never reach the host (Emulator.lose_command / lose_answer, control `lose ...`)."""

import pytest

from modemd.emulator.control import run_command

from .helpers import activate, modem, open_client, recv_exact, tcp_server


async def test_lose_command_the_module_never_sees_the_line():
    async with modem() as (emu, port):
        emu.lose_command(r"AT\+CSQ")
        await port.write(b"AT+CSQ\r")
        assert await port.drain(0.2) == b""  # no echo, no answer: it never arrived
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"
        assert "AT+CSQ" not in emu.commands
        assert emu.lost == ["command AT+CSQ"]
        # count=1: the next one goes through
        assert (await port.ok("AT+CSQ"))[0].startswith("+CSQ: ")


async def test_lose_command_count_and_non_matching_lines_pass():
    async with modem() as (emu, port):
        await port.ok("ATE0")
        emu.lose_command(r"AT\+QIRD=\d+,\d+", count=2)
        await port.write(b"AT+QIRD=0,1500\r")
        await port.write(b"AT+QIRD=0\r")  # no fullmatch: executed
        assert await port.expect(b"ERROR\r\n") == b"\r\nERROR\r\n"  # (no context: ERROR)
        await port.write(b"AT+QIRD=1,10\r")
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"
        await port.write(b"AT+QIRD=0,1\r")  # the rule is used up: answered
        assert await port.expect(b"ERROR\r\n") == b"\r\nERROR\r\n"
        assert emu.lost == ["command AT+QIRD=0,1500", "command AT+QIRD=1,10"]


async def test_lose_command_glue_prepends_the_text_to_the_next_line():
    async with modem() as (emu, port):
        emu.lose_command(r"AT\+CSQ", glue=True)
        await port.write(b"AT+CSQ\r")
        assert await port.drain(0.2) == b""
        await port.write(b"AT\r")
        # the module parses "AT+CSQAT" whole: echoed as received, answered ERROR
        assert await port.expect(b"ERROR\r\n") == b"AT+CSQAT\r\r\nERROR\r\n"
        assert emu.lost == ["command AT+CSQ"]
        assert emu.commands[-1] == "AT+CSQAT"
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"


async def test_lose_prompt_leaves_the_module_in_data_mode():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await activate(port)
        assert await open_client(port, 0, sport) == "+QIOPEN: 0,0"
        server = await accepted.receive()
        emu.lose_answer(r"AT\+QISEND=0,5", part="prompt")
        await port.write(b"AT+QISEND=0,5\r")
        assert await port.drain(0.2) == b""  # no "> "
        await port.write(b"hello")  # the module really waits for the bytes
        assert await port.expect(b"SEND OK\r\n") == b"\r\nSEND OK\r\n"
        assert await recv_exact(server, 5) == b"hello"
        assert emu.lost == ["prompt AT+QISEND=0,5"]
        # the next QISEND has its prompt again
        assert await port.send(0, b"again") == "SEND OK"
        assert await recv_exact(server, 5) == b"again"


async def test_lose_final_send_ok_and_close_ok():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        emu.lose_answer(r"AT\+QISEND=.*", part="final")
        await port.write(b"AT+QISEND=0,4\r")
        assert await port.expect(b"> ") == b"\r\n> "
        await port.write(b"data")
        assert await recv_exact(server, 4) == b"data"  # sent: only SEND OK was lost
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"
        emu.lose_answer(r"AT\+QICLOSE=0", part="final")
        await port.write(b"AT+QICLOSE=0\r")
        assert await port.drain(0.2) == b""
        assert emu.socket_info(0) is None  # closed all the same
        assert await port.ok("AT+QISTATE") == []


async def test_lose_final_on_a_two_stage_family_drops_the_second_stage():
    async with modem(family="bc25") as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await port.ok("AT+CGACT=1,1")
        await port.ok(f'AT+QIOPEN=1,0,"TCP","127.0.0.1",{sport},0,0')
        assert await port.urc("+QIOPEN: 0,") == "+QIOPEN: 0,0"
        server = await accepted.receive()
        emu.lose_answer(r"AT\+QISEND=0,2", part="final")
        await port.write(b"AT+QISEND=0,2\r")
        await port.expect(b"> ")
        await port.write(b"ab")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"  # the first stage stays
        assert await recv_exact(server, 2) == b"ab"
        emu.lose_answer(r"AT\+QICLOSE=0", part="final")
        await port.write(b"AT+QICLOSE=0\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"\r\nOK\r\n"  # no CLOSE OK before it


async def test_lose_answer_all_drops_a_qird_payload_that_was_read():
    async with modem() as (emu, port), tcp_server() as (sport, accepted):
        await port.ok("ATE0")
        await activate(port)
        await open_client(port, 0, sport)
        server = await accepted.receive()
        await server.send_all(b"payload")
        assert await port.urc('+QIURC: "recv"') == '+QIURC: "recv",0'
        emu.lose_answer(r"AT\+QIRD=0,1500")
        await port.write(b"AT+QIRD=0,1500\r")
        assert await port.drain(0.2) == b""  # header, payload and OK all lost
        assert await port.ok("AT+QIRD=0,0") == ["+QIRD: 7,7,0"]  # but it was read
        assert emu.lost == ["all AT+QIRD=0,1500"]


async def test_lose_answer_all_includes_the_echo():
    async with modem() as (emu, port):
        emu.lose_answer(r"ATI")
        await port.write(b"ATI\r")
        assert await port.drain(0.2) == b""
        assert "ATI" in emu.commands  # executed
        await port.write(b"AT\r")
        assert await port.expect(b"OK\r\n") == b"AT\r\r\nOK\r\n"


async def test_lose_faults_reject_bad_arguments():
    async with modem() as (emu, _port):
        with pytest.raises(ValueError, match="bad regular expression"):
            emu.lose_command("AT(")
        with pytest.raises(ValueError, match="part must be one of"):
            emu.lose_answer("AT", part="echo")
        with pytest.raises(ValueError, match="count"):
            emu.lose_command("AT", count=-1)


async def test_lose_over_the_control_socket():
    async with modem() as (emu, port):
        assert await run_command(emu, r"lose command AT\+CSQ 2 glue") == "ok"
        assert await run_command(emu, r"lose prompt AT\+QISEND=.* 3") == "ok"
        assert await run_command(emu, "lose final AT\\+QICLOSE=\\d") == "ok"
        assert await run_command(emu, "lose answer ATI") == "ok"
        assert [(r[0].pattern, r[1], r[2]) for r in emu._lose_cmd] == [(r"AT\+CSQ", 2, True)]
        assert [(r[0].pattern, r[1], r[2]) for r in emu._lose_ans] == [
            (r"AT\+QISEND=.*", 3, "prompt"),
            (r"AT\+QICLOSE=\d", 1, "final"),
            ("ATI", 1, "all"),
        ]
        assert await run_command(emu, "lose answer ATI 0") == "ok"  # 0 cancels
        assert [r[0].pattern for r in emu._lose_ans] == [r"AT\+QISEND=.*", r"AT\+QICLOSE=\d"]
        assert (await run_command(emu, "lose bogus AT")).startswith("error expected lose command")
        assert (await run_command(emu, "lose command AT( 1")).startswith(
            "error bad regular expression"
        )
        assert (await run_command(emu, "lose final AT 1 glue")).startswith("error lose final")
        assert (await run_command(emu, "lose command AT x")).startswith("error expected an integer")
        assert "lose command <regex>" in await run_command(emu, "help")
        await port.write(b"ATI\r")  # the glued CSQ rule does not touch it
        assert (await port.expect(b"OK\r\n")).startswith(b"ATI\r")
