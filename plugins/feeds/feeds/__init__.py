"""The feeds plugin shipped with pollerd: RSS and Atom feeds, one event per new entry."""
