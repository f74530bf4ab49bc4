"""Security and quality scanners over source trees and images."""
