"""The eSpeak NG worker process (see synth.py): stdlib and ctypes only, run as a script.

Requests arrive as JSON lines on stdin; each is spoken by a forked child of this process, so
every utterance starts from the same never-used synthesizer state; the int16 PCM (22.05 kHz)
goes back on stdout as an 8-byte little-endian length and the bytes (a negative length
announces an error message instead).
"""

import ctypes
import json
import os
import struct
import sys

ESPEAK_RATE = 22_050


def _serve() -> None:
    lib = ctypes.CDLL(os.environ["DEPLOYLAB_ESPEAK_LIB"])
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    libc = ctypes.CDLL(None)
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                     ctypes.c_void_p)
    chunks: list[bytes] = []

    @callback_type
    def collect(wav, n, events):
        if n > 0:
            chunks.append(ctypes.string_at(wav, 2 * n))
        return 0

    # 2 = AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns when the callback has had it all
    if lib.espeak_Initialize(2, 0, os.environ["DEPLOYLAB_ESPEAK_DATA"].encode(), 0) != ESPEAK_RATE:
        sys.stdout.buffer.write(struct.pack("<q", -24) + b"espeak_Initialize failed")
        return
    lib.espeak_SetSynthCallback(collect)
    lib.espeak_SetVoiceByName(b"en-us")  # load the English dictionary before forking
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        req = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: a fresh copy of the never-used synthesizer
            os.close(read)
            libc.srand(1)  # breathy variants draw noise from rand()
            lib.espeak_ng_SetRandSeed(1)
            ok = lib.espeak_SetVoiceByName(req["voice"].encode()) == 0
            for param, key in ((1, "rate"), (2, "amplitude"), (3, "pitch"), (4, "range")):
                lib.espeak_SetParameter(param, int(req[key]), 0)
            text = req["text"].encode()
            ok = ok and lib.espeak_Synth(text, len(text) + 1, 0, 0, 0, 0, None, None) == 0
            lib.espeak_Synchronize()
            data = b"".join(chunks) if ok else b""
            with os.fdopen(write, "wb") as f:
                f.write(data)
            os._exit(0 if ok else 1)
        os.close(write)
        with os.fdopen(read, "rb") as f:
            data = f.read()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            msg = f"eSpeak could not speak {req['text']!r} with voice {req['voice']!r}".encode()
            out.write(struct.pack("<q", -len(msg)) + msg)
        else:
            out.write(struct.pack("<q", len(data)) + data)
        out.flush()



if __name__ == "__main__":
    _serve()
