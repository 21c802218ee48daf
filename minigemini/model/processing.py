class MiniGeminiProcessor:  # placeholder replaced below
    pass
