"""Widgets the pages share (no st.cache_* here: data comes through app.ui.data).

    common     query parameters, feature links, token highlighting (always escaped), errors
    heads      the layer x head grid, patterns, contexts, head attribution
    report     the "Export report" control
    parity     the feature page's SAEDashboard views: vocabulary logit histogram, neuron alignment, whole contexts
    attribution   an attribution graph as a figure, its faithfulness in words, a node's details
    explanations  a feature's explanations with their scores; the search by words of explanations and labels
"""
