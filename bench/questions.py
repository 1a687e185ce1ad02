"""Customer questions answered by the demo brand's knowledge, shared by the load profile and baseline.

Kept apart from the Locust file because importing Locust monkey-patches the process with gevent.
"""

QUESTIONS = (
    "How long do I have to return an item?",
    "Is shipping free?",
    "How long does delivery take to Canada?",
    "What is the warranty on the TrailBlazer 2 tent?",
    "Which payment methods do you accept?",
    "When is the Portland store open?",
    "How do I track my order?",
    "Can I return a tent that I pitched outdoors?",
)
