"""The UI's data layer: the only modules with st.cache_*; every store and analysis call a page makes goes here.

    cache      what several pages share (dictionaries, feature cards, search, the model) and `writing()`
    heads      the Heads page's calls (patching too)   steering   the Steering page's calls
    inspector  the inspector's pursuit trace             codes      the Code search page's calls
    search     the Search by text page's calls (the forward pass under the model's lock, labels apart)
    parity     the feature page's on-request views: vocabulary logit histogram, alignment, whole contexts
    explanations  explanations and their scores: feature page, browser, word search
    attribution   the Attribution page: stored graphs, one graph, its features' labels and explanations
    readers    read-only access to the store, one DuckDB instance shared by every read, held briefly
"""
