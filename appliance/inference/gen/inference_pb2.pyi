from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenVectors(_message.Message):
    __slots__ = ("tokens", "data")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    tokens: int
    data: bytes
    def __init__(self, tokens: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts",)
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, texts: _Optional[_Iterable[str]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("model_id", "dimensions", "vectors", "token_counts")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dimensions: int
    vectors: bytes
    token_counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model_id: _Optional[str] = ..., dimensions: _Optional[int] = ..., vectors: _Optional[bytes] = ..., token_counts: _Optional[_Iterable[int]] = ...) -> None: ...

class EmbedTokensRequest(_message.Message):
    __slots__ = ("texts", "pooled")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    POOLED_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    pooled: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., pooled: _Optional[bool] = ...) -> None: ...

class EmbedTokensResponse(_message.Message):
    __slots__ = ("model_id", "dimensions", "texts", "pooled")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    POOLED_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dimensions: int
    texts: _containers.RepeatedCompositeFieldContainer[TokenVectors]
    pooled: bytes
    def __init__(self, model_id: _Optional[str] = ..., dimensions: _Optional[int] = ..., texts: _Optional[_Iterable[_Union[TokenVectors, _Mapping]]] = ..., pooled: _Optional[bytes] = ...) -> None: ...

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("model_id", "scores")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, model_id: _Optional[str] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class EncodePromptsRequest(_message.Message):
    __slots__ = ("texts", "cards")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    CARDS_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    cards: bool
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., cards: _Optional[bool] = ...) -> None: ...

class EncodePromptsResponse(_message.Message):
    __slots__ = ("model_id", "dimensions", "vectors")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dimensions: int
    vectors: bytes
    def __init__(self, model_id: _Optional[str] = ..., dimensions: _Optional[int] = ..., vectors: _Optional[bytes] = ...) -> None: ...
