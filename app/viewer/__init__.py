"""The viewer page's files (static/): plain HTML, CSS and JavaScript, served as they are
by app/api/viewer.py; nothing is built or fetched at run time."""
