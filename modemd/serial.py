"""The serial port: opened exclusively, set up by pyserial, driven by trio on a non-blocking fd.

pyserial does the termios work (baud rate, 8N1, RTS/CTS, raw mode). It leaves VMIN=0, which makes an
empty read return b'' instead of EAGAIN; we set VMIN=1 so that b'' after a readable wake-up really
means the device went away (USB unplug, module power cut). No thread ever reads the port, so every
wait is cancellable (dependencies.md §2).
"""

from __future__ import annotations

import errno
import fcntl
import os
import termios
from pathlib import Path

import trio

STANDARD_BAUDRATES = (
    9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1000000, 1500000, 2000000,
    3000000, 4000000,
)


class SerialError(Exception):
    """A port problem a user can fix; str() is one line that names the fix."""


class SerialMissing(SerialError):
    """The device node does not exist (yet): USB enumeration, or the module is powered off."""


class SerialDisconnected(SerialError):
    """The device disappeared while open (USB re-enumeration, power cut)."""


class PortLock:
    """A UUCP-style lock file (`LCK..ttyUSB2`, ASCII pid) held with flock for the port's life.

    flock makes a second modemd fail at once; the pid inside tells the user who holds it. A lock file
    left by a dead process is simply taken over (flock is released when its holder dies).
    """

    def __init__(self, device: str, lock_dir: str) -> None:
        self.path = Path(lock_dir) / f"LCK..{Path(device).name}"
        self._fd: int | None = None

    def acquire(self, port_label: str) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            raise SerialError(
                f"lock directory {self.path.parent} does not exist: create it or set modem.lock_dir"
            ) from None
        except PermissionError:
            raise SerialError(
                f"cannot write lock file {self.path}: run modemd as a user who may write "
                f"{self.path.parent} (e.g. group lock/dialout) or set modem.lock_dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise SerialError(
                f"serial port {port_label} is in use by {who} (lock {self.path}): stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid():10d}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return None


class SerialPort:
    """An open tty with trio-awaitable receive_some / send_all (the AT channel's only transport)."""

    def __init__(self, ser, lock: PortLock | None, path: str) -> None:
        self._ser = ser
        self._lock = lock
        self.path = path
        self.fd: int = ser.fileno()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: str,
        baudrate: int = 115200,
        *,
        rtscts: bool = False,
        lock_dir: str | None = "/run/lock",
    ) -> SerialPort:
        """Open `path` exclusively or raise SerialError with one clear line."""
        import serial  # pyserial, imported late so the sans-IO layers never need it

        real = os.path.realpath(path)
        if not os.path.exists(real):
            raise SerialMissing(
                f"serial port {path} does not exist: check modem.port (is the module powered and "
                "its USB driver loaded? ls /dev/ttyUSB* /dev/modemd-at)"
            )
        lock = PortLock(real, lock_dir) if lock_dir else None
        if lock:
            lock.acquire(path)
        try:
            ser = serial.Serial()
            ser.port = real
            ser.baudrate = baudrate
            ser.bytesize, ser.parity, ser.stopbits = 8, "N", 1
            ser.rtscts = rtscts
            ser.timeout = None
            ser.exclusive = True
            ser.open()
        except serial.SerialException as exc:
            if lock:
                lock.release()
            raise _explain(path, exc) from None
        except BaseException:
            if lock:
                lock.release()
            raise
        port = cls(ser, lock, path)
        port._exclusive_and_vmin()
        return port

    def _exclusive_and_vmin(self) -> None:
        try:
            fcntl.ioctl(self.fd, termios.TIOCEXCL)
        except OSError:
            pass  # not a tty that supports it (e.g. some USB-serial drivers); the locks still hold
        attrs = termios.tcgetattr(self.fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    @property
    def baudrate(self) -> int:
        """Bits per second on the line (the AT channel's expected times add the payload's wire time)."""
        return int(self._ser.baudrate)

    async def receive_some(self, max_bytes: int = 65536) -> bytes:
        """Bytes that arrived; raises SerialDisconnected when the device went away."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            data = self._read(max_bytes)
            if data:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            if data == b"" and waited:
                raise SerialDisconnected(f"serial port {self.path} disappeared")
            await trio.lowlevel.wait_readable(self.fd)
            waited = True

    def read_nowait(self, max_bytes: int = 65536) -> bytes | None:
        """What has arrived, without waiting or a checkpoint (None: nothing); the reader uses it
        right after a paced sleep, which already was its checkpoint."""
        return self._read(max_bytes) or None

    def _read(self, max_bytes: int) -> bytes | None:
        """One non-blocking read: None when nothing is there, b"" when the tty reports EOF."""
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise SerialDisconnected(f"serial port {self.path} failed: {exc.strerror}") from None

    def write_nowait(self, data: bytes) -> int:
        """Write what the tty takes now, without waiting (0 when it takes nothing); the AT channel
        writes a QISEND payload the moment its prompt is parsed, without a task switch."""
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV):
                raise SerialDisconnected(f"serial port {self.path} disappeared") from None
            raise

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view):]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.fd)
            except OSError as exc:
                if exc.errno in (errno.EIO, errno.ENXIO, errno.ENODEV):
                    raise SerialDisconnected(f"serial port {self.path} disappeared") from None
                raise
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            trio.lowlevel.notify_closing(self.fd)
        except RuntimeError:
            pass  # not inside trio (closing at exit)
        try:
            self._ser.close()
        finally:
            if self._lock:
                self._lock.release()


def _explain(path: str, exc: Exception) -> SerialError:
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return SerialError(
            f"permission denied on serial port {path}: add the modemd user to the dialout group "
            "(or the group that owns the port)"
        )
    if err in (errno.EAGAIN, errno.EBUSY) or "exclusively lock" in text or "busy" in text.lower():
        return SerialError(f"serial port {path} is in use by another program: stop it first")
    if err in (errno.ENOTTY, errno.EISDIR, errno.EINVAL) or "Inappropriate ioctl" in text:
        return SerialError(
            f"{path} is not a serial port: set modem.port to the module's AT port, e.g. "
            "/dev/ttyUSB2 or /dev/modemd-at"
        )
    if err == errno.ENOENT or "No such file" in text:
        return SerialMissing(f"serial port {path} does not exist: check modem.port")
    return SerialError(f"cannot open serial port {path}: {text}")
