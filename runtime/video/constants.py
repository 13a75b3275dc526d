"""Limits and names shared by the video writer and its codecs."""

SUPPORTED_EXTENSIONS = (".mp4", ".webm", ".gif", ".png")
VIEW_MIN_SIDE = 256  # scale="auto" upscales until the short side is at least this
MAX_SIDE = 8192  # largest output width/height, after upscaling
MAX_INPUT_PIXELS = 64_000_000  # per image or video frame read: beyond this, decoding alone needs GBs
MIN_FPS = 0.1  # a frame every 10 s; the writers' time bases need a rate this high
MAX_FPS = 240.0
GIF_MAX_FPS = 50.0  # GIF delays are 1/100 s; browsers stretch delays under 0.02 s to 0.1 s
_DEFAULT_CRF = {".mp4": 18, ".webm": 24}
_CRF_RANGE = {".mp4": (0, 51), ".webm": (0, 63)}
_INTERPOLATION = "BICUBIC"  # libswscale bicubic: Keys cubic with a = -0.6 (swscale's default C)
_PNG_DIGITS = 5
_PNG_FPS_KEY = "kinema-fps"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
