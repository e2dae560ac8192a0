"""Texts for parity tests: several languages and scripts, 1 token to the limit, repeated tokens."""

from __future__ import annotations

MULTILINGUAL = [
    "What is BGE-M3?",
    "BGE-M3 is an embedding model that supports dense retrieval, lexical matching and "
    "multi-vector interaction.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le modèle produit des vecteurs denses, des poids lexicaux et des vecteurs ColBERT.",
    "El modelo admite más de cien idiomas y entradas de hasta ocho mil tokens.",
    "深度学习是机器学习的一个分支，它使用多层神经网络。",
    "東京は日本の首都であり、世界最大級の都市圏を持つ。",
    "Москва — столица России, крупнейший по численности населения город страны.",
    "الذكاء الاصطناعي هو فرع من علوم الحاسوب.",
    "कृत्रिम बुद्धिमत्ता कंप्यूटर विज्ञान की एक शाखा है।",
    "Η τεχνητή νοημοσύνη αλλάζει τον κόσμο.",
    "인공지능은 컴퓨터 과학의 한 분야이다.",
    "hello hello hello world world hello",  # the same token several times in one text
    "a",
    "Retrieval-augmented generation (RAG) combines a retriever with a generator; "
    "the retriever finds passages.",
]

LONG = " ".join(
    "Long documents test truncation: the model sees at most its limit of tokens, and the rest is cut away."
    for _ in range(40)
)

CORPUS = [
    *MULTILINGUAL,
    LONG,
    *[
        "Paris is the capital of France. Berlin is the capital of Germany. Madrid is the capital of Spain.",
        "Deep learning uses neural networks with many layers to learn representations of data.",
        "Panda bears eat bamboo. The giant panda lives in the mountains of central China.",
        "query: how many people live in Tokyo? passage: the Tokyo metropolitan area has 37 million people.",
        "0123456789 !?.,;:()[]{}<>-_=+*/\\'\"@#$%^&|~` 😀 🚀",
    ],
]
