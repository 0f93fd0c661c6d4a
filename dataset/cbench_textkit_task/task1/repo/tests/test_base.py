import unittest

from textkit.numbers import clamp
from textkit.strings import is_blank, slugify, title_case, truncate


class BaseBehaviour(unittest.TestCase):
    def test_truncate_short_text_is_unchanged(self):
        self.assertEqual(truncate("abc", 5), "abc")

    def test_slugify(self):
        self.assertEqual(slugify("Hello  World"), "hello-world")

    def test_title_case(self):
        self.assertEqual(title_case("hello world"), "Hello World")

    def test_is_blank(self):
        self.assertTrue(is_blank("  "))

    def test_clamp(self):
        self.assertEqual(clamp(5, 0, 3), 3)


if __name__ == "__main__":
    unittest.main()
