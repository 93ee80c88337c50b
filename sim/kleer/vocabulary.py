"""Swedish-looking words for the seeded book: names, places, streets, products."""

from __future__ import annotations

SURNAMES = (
    "Andersson", "Johansson", "Karlsson", "Nilsson", "Eriksson", "Larsson", "Olsson", "Persson",
    "Svensson", "Gustafsson", "Pettersson", "Jonsson", "Jansson", "Hansson", "Bengtsson", "Lindberg",
    "Lindström", "Lindqvist", "Lindgren", "Berg", "Bergström", "Lundberg", "Lundqvist", "Mattsson",
    "Berglund", "Fredriksson", "Sandberg", "Henriksson", "Forsberg", "Sjöberg", "Wallin", "Engström",
    "Eklund", "Danielsson", "Lundin", "Håkansson", "Björk", "Bergman", "Gunnarsson", "Holm",
    "Wikström", "Samuelsson", "Isaksson", "Fransson", "Bergqvist", "Nyström", "Holmberg", "Arvidsson",
    "Löfgren", "Söderberg", "Nyberg", "Blomqvist", "Claesson", "Nordström", "Mårtensson", "Lundgren",
    "Axelsson", "Hedlund", "Sundberg", "Åberg", "Öberg", "Strand", "Ekström", "Dahlberg",
)

FIRST_NAMES = (
    "Anna", "Eva", "Maria", "Karin", "Sara", "Lena", "Emma", "Kerstin", "Ingrid", "Malin", "Johanna",
    "Linnea", "Elin", "Sofia", "Ida", "Hanna", "Lars", "Mikael", "Anders", "Johan", "Per", "Erik",
    "Karl", "Peter", "Jan", "Thomas", "Daniel", "Fredrik", "Hans", "Magnus", "Mattias", "Oskar",
    "Björn", "Gustav", "Nils", "Åsa", "Märta", "Göran", "Jörgen", "Stefan",
)

PLACES = (
    "Göteborg", "Malmö", "Uppsala", "Västerås", "Örebro", "Linköping", "Helsingborg", "Jönköping",
    "Norrköping", "Lund", "Umeå", "Gävle", "Borås", "Södertälje", "Eskilstuna", "Halmstad", "Växjö",
    "Karlstad", "Sundsvall", "Östersund", "Trollhättan", "Luleå", "Kalmar", "Falun", "Skövde",
    "Kiruna", "Visby", "Ystad", "Nacka", "Solna", "Täby", "Kungsbacka", "Varberg", "Mora",
    "Fjällbacka", "Åre", "Norrtälje", "Vimmerby", "Sigtuna", "Stockholm",
)

NATURE = (
    "Björk", "Ek", "Gran", "Tall", "Sjö", "Fjäll", "Norr", "Syd", "Väst", "Öst", "Lind", "Ask",
    "Älv", "Berg", "Strand", "Dal", "Holm", "Rönn", "Al", "Sälg", "Ljung", "Mo", "Hav", "Skog",
)

PLACE_SUFFIXES = ("lunda", "vik", "dal", "berg", "holm", "näs", "by", "sund", "ö", "torp", "hult", "ås")

TRADES = (
    "Bygg", "Konsult", "Data", "Teknik", "Måleri", "El", "VVS", "Transport", "Redovisning", "Design",
    "Media", "Fastigheter", "Logistik", "Industri", "Handel", "Snickeri", "Trädgård", "Städ",
    "Restaurang", "Bageri", "Tandvård", "Juridik", "Arkitekter", "Mekaniska", "Plåt", "Rör",
    "Markentreprenad", "Säkerhet", "Utbildning", "Event", "Kommunikation", "Fysioterapi",
)

STREETS = (
    "Storgatan", "Kungsgatan", "Drottninggatan", "Sveavägen", "Vasagatan", "Industrivägen", "Hamngatan",
    "Järnvägsgatan", "Skolgatan", "Kyrkogatan", "Parkvägen", "Östra Långgatan", "Björkvägen",
    "Ringvägen", "Nygatan", "Trädgårdsgatan", "Strandvägen", "Fabriksgatan", "Mölndalsvägen", "Tegelbruksvägen",
)

# (name, type, unit, price in öre (SEK), VAT %, recurring?)
PRODUCTS = (
    ("Konsulttimme", "Services", "tim", 95000, 25, False),
    ("Konsulttimme senior", "Services", "tim", 125000, 25, False),
    ("Projektledning", "Services", "tim", 110000, 25, False),
    ("Installation", "Services", "st", 250000, 25, False),
    ("Utbildningsdag", "Services", "dag", 850000, 25, False),
    ("Resekostnader", "Services", "st", 45000, 25, False),
    ("Material", "Goods", "st", 12950, 25, False),
    ("Arbetsplatsbelysning", "Goods", "st", 189900, 25, False),
    ("Facklitteratur", "Goods", "st", 39900, 6, False),
    ("Lunchbuffé", "Goods", "st", 14500, 12, False),
    ("Licens Standard", "DigitalServices", "mån", 49900, 25, True),
    ("Licens Premium", "DigitalServices", "mån", 129900, 25, True),
    ("Support Guld", "Services", "mån", 300000, 25, True),
    ("Serverdrift", "Services", "mån", 450000, 25, True),
    ("Webbhotell", "DigitalServices", "mån", 19900, 25, True),
    ("Underhållsavtal", "Services", "mån", 150000, 25, True),
    ("Startavgift", "Services", "st", 500000, 25, False),
    ("Molnlagring 100 GB", "DigitalServices", "mån", 9900, 25, True),
)

PRODUCT_VARIANTS = ("", " Bas", " Plus", " Pro", " XL", " Nord", " Syd", " 2.0")

PROJECT_NAMES = (
    "Ny webbplats", "Ombyggnad kontor", "Implementation affärssystem", "Fasadrenovering", "Digitalisering",
    "Energieffektivisering", "Flytt av serverhall", "Varumärkesarbete", "Utbildningsprogram", "Takbyte",
    "Lagerautomation", "Säkerhetsgranskning", "Kundportal", "Badrumsrenovering",
)

AGREEMENT_DESCRIPTIONS = (
    "Supportavtal", "Licensavtal", "Driftavtal", "Serviceavtal", "Abonnemang", "Hyresavtal utrustning",
)
